//! Project tasks: `cargo xtask setup | build | run | test | bench | pgo | demo | fuzz`.
//!
//! `setup` installs what building the eBPF programs needs (DESIGN §3) and is idempotent;
//! `run`, `test` and `bench` call it first, so a fresh machine needs only these commands.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces (nightly rust-src, LLVM 22, bpf-linker); idempotent.
    Setup,
    /// Build the gateway (with its embedded eBPF object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run the gateway; extra arguments go to `gateway run` (e.g. `-- -c FILE`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit, in-process and privileged end-to-end.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and write BENCHMARKS.md.
    Bench,
    /// Run every fuzz target (fuzz/, cargo-fuzz with libFuzzer) for a bounded time; installs
    /// cargo-fuzz when missing. A crash fails it, with the reproducer's path.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
    /// Retrain the release build's profile (profile-guided optimisation): build an instrumented
    /// gateway, run the training workload through the real redirect, write gateway/pgo/.
    Pgo,
    /// An offline tour: a fake provider on loopback, the gateway, curl and the Python SDK in a
    /// demo cgroup (needs root, like the tests).
    Demo,
}

const NIGHTLY: &str = "nightly";
/// cargo-fuzz, installed from the crate registry with `--locked` when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SMOKE_SECS: u64 = 10;
const LLVM_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests drive: real clients and namespace tools.
const TEST_PACKAGES: [(&str, &str); 14] = [
    ("curl", "curl"),
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("setpriv", "util-linux"),
    ("nsenter", "util-linux"),
    ("openssl", "openssl"),
    ("bpftool", "bpftool"),
    ("systemd-analyze", "systemd"),
    // The fleet tests: a real NATS JetStream, a real rsyslog, a real headless browser.
    ("nats-server", "nats-server"),
    ("rsyslogd", "rsyslog"),
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // The approval page test trusts its CAs in the browser's own NSS database.
    ("certutil", "libnss3-tools"),
    ("logger", "bsdutils"),
];

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Build { release } => {
            setup()?;
            let bin = build(release)?;
            step(&format!("built {}", bin.display()));
            Ok(())
        }
        Cmd::Run { args } => {
            setup()?;
            let bin = build(true)?;
            let mut cmd = Command::new(&bin);
            cmd.arg("run").args(&args);
            step(&format!("running {} run {}", bin.display(), args.join(" ")));
            let status = cmd
                .status()
                .with_context(|| format!("starting {}", bin.display()))?;
            if !status.success() {
                bail!("gateway exited with {status}");
            }
            Ok(())
        }
        Cmd::Test { args } => {
            let mut phases = Phases::default();
            let r = test(&args, &mut phases);
            phases.report();
            r
        }
        Cmd::Fuzz { time } => {
            setup()?;
            fuzz_in(time, None)
        }
        Cmd::Demo => {
            setup()?;
            test_tools()?;
            build(false)?;
            step("demo (debug build)");
            run(cargo()
                .args(["run", "-q", "-p", "gateway-tests", "--bin", "demo"])
                .env("GATEWAY_BIN", workspace().join("target/debug/gateway")))
        }
        Cmd::Bench => {
            setup()?;
            test_tools()?;
            bench_tools()?;
            let (bin, how) = build_how(true)?;
            step("benchmarks (release build)");
            run(bench(&bin)
                .arg(workspace().join("BENCHMARKS.md"))
                .env("GATEWAY_BUILD", how))
        }
        Cmd::Pgo => {
            setup()?;
            test_tools()?;
            bench_tools()?;
            pgo_train()
        }
    }
}

/// `cargo xtask test`: setup, tools and build, the test binaries, then every test (with the
/// fuzz smoke run beside them when no filter was given). Each phase is timed in `phases`.
fn test(args: &[String], phases: &mut Phases) -> Result<()> {
    phases.time("setup (eBPF toolchain)", setup)?;
    // The test tools (Debian packages, promtool) install while cargo builds the gateway:
    // neither needs the other, and apt waits on the network while cargo uses the CPU.
    let (tools, built) = phases.time("test tools + debug build, side by side", || {
        std::thread::scope(|s| {
            let tools = s.spawn(test_tools);
            let built = build(false);
            (
                tools
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("installing test tools panicked"))),
                built,
            )
        })
    });
    tools?;
    built?;
    let bin = workspace().join("target/debug/gateway");
    // The test binaries first, at full speed.
    step("cargo test --no-run (building the test binaries)");
    phases.time("build the test binaries (cargo test --no-run)", || {
        run(cargo().args(["test", "--no-run"]).args(args)).context("building the tests failed")
    })?;
    // A short run of every fuzz target, unless only some tests were asked for. Its
    // build (a second, instrumented build of the gateway) runs beside the tests at the
    // lowest CPU priority: the end-to-end tests mostly wait on clients and timers, and
    // the build takes only the time they leave idle. Its output goes to a log file.
    let fuzzed = args.is_empty().then(|| {
        let log = workspace().join("target/fuzz-smoke.log");
        step(&format!(
            "fuzz smoke run in the background (nice 19), output in {}",
            log.display()
        ));
        std::thread::spawn(move || fuzz_in(FUZZ_SMOKE_SECS, Some(&log)))
    });
    step("cargo test (default members: unit, in-process, privileged end-to-end)");
    let mut c = cargo();
    c.args(["test", "--no-fail-fast"])
        .args(args)
        .env("GATEWAY_BIN", &bin);
    let tested = phases.time("run the tests (cargo test)", || run_tests(c));
    if let Some(f) = fuzzed {
        step("waiting for the fuzz smoke run");
        let log = workspace().join("target/fuzz-smoke.log");
        match phases.time("wait for the fuzz smoke run (after the tests)", || f.join()) {
            Ok(Ok(())) => step("fuzz smoke run: no crash"),
            Ok(Err(e)) => {
                step(&format!(
                    "fuzz smoke run failed; its log, {}:",
                    log.display()
                ));
                if let Ok(text) = fs::read_to_string(&log) {
                    let lines: Vec<&str> = text.lines().collect();
                    for l in &lines[lines.len().saturating_sub(60)..] {
                        eprintln!("  {l}");
                    }
                }
                return Err(e.context("fuzz smoke run"));
            }
            Err(_) => bail!("the fuzz smoke run panicked"),
        }
    }
    tested
}

/// Wall time of each phase of a task, printed at its end (also when it failed): where CI's
/// time goes.
#[derive(Default)]
struct Phases(Vec<(String, std::time::Duration)>);

impl Phases {
    fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let t0 = std::time::Instant::now();
        let out = f();
        let took = t0.elapsed();
        step(&format!(
            "phase done in {:.1} s: {name}",
            took.as_secs_f64()
        ));
        self.0.push((name.to_string(), took));
        out
    }

    fn report(&self) {
        let total: f64 = self.0.iter().map(|(_, d)| d.as_secs_f64()).sum();
        step(&format!("phases (wall time, {total:.1} s in all):"));
        for (name, d) in &self.0 {
            step(&format!("  {:>7.1} s  {name}", d.as_secs_f64()));
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn step(msg: &str) {
    eprintln!("xtask: {msg}");
}

/// PATH with ~/.cargo/bin first (where `cargo install` puts bpf-linker).
fn path_with_cargo_bin() -> OsString {
    let mut paths = vec![cargo_home().join("bin")];
    if let Some(p) = env::var_os("PATH") {
        paths.extend(env::split_paths(&p));
    }
    env::join_paths(paths).expect("PATH entries are valid")
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace())
        .env("PATH", path_with_cargo_bin());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}

/// Run `cargo test`, echoing its output, and close with one summary line over every test
/// binary ("tests: N passed, M failed"). Fails when a test failed or none ran.
fn run_tests(mut cmd: Command) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    // Wall time per test binary: from cargo's "Running NAME (PATH)" (on its stderr, echoed
    // as it comes) to the binary's "test result:" (on stdout).
    type Current = std::sync::Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>;
    let current: Current = Default::default();
    let err = child.stderr.take().expect("piped");
    let cur = current.clone();
    let echo = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(rest) = line.trim_start().strip_prefix("Running ") {
                let name = rest.split(" (").next().unwrap_or(rest).to_string();
                *cur.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((name, std::time::Instant::now()));
            }
        }
    });
    let mut binaries: Vec<(String, std::time::Duration)> = vec![];
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if line.starts_with("test result: ")
            && let Some((name, t0)) = current.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            binaries.push((name, t0.elapsed()));
        }
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(kind)) = (w.next(), w.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match kind {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    let _ = echo.join();
    binaries.sort_by_key(|b| std::cmp::Reverse(b.1));
    println!("test binaries by wall time:");
    for (name, d) in &binaries {
        println!("  {:>7.1} s  {name}", d.as_secs_f64());
    }
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed ({failed} failed, cargo exited with {status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

fn setup() -> Result<()> {
    step("setup: checking the eBPF toolchain (DESIGN §3)");
    // 1. nightly toolchain
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).context(
        "rustup is needed to build the eBPF programs; install it from the rustup project",
    )?;
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("setup: nightly toolchain present");
    } else {
        step("setup: installing the nightly toolchain");
        run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
            .context("installing the nightly toolchain failed")?;
    }
    // 2. rust-src for nightly (build-std=core)
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))
    .unwrap_or_default();
    if comps.lines().any(|l| l.starts_with("rust-src")) {
        step("setup: nightly rust-src present");
    } else {
        step("setup: installing rust-src for nightly");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
            .context("`rustup component add rust-src --toolchain nightly` failed")?;
    }
    // 3. LLVM 22 development files (bpf-linker links against nightly's LLVM)
    ensure_debs(&LLVM_PACKAGES).context("installing LLVM 22 for bpf-linker failed")?;
    // 4. bpf-linker built against LLVM 22
    let linker = cargo_home().join("bin/bpf-linker");
    let good = output(Command::new(&linker).arg("--version")).is_some()
        && output(Command::new("ldd").arg(&linker)).is_some_and(|l| l.contains("libLLVM.so.22"));
    if good {
        step("setup: bpf-linker (LLVM 22) present");
    } else {
        step(&format!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes a few minutes)"
        ));
        let mut path = vec![PathBuf::from(LLVM_PREFIX).join("bin")];
        path.extend(env::split_paths(&path_with_cargo_bin()));
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", env::join_paths(path)?)
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env_remove("RUSTUP_TOOLCHAIN"))
        .context("`cargo install bpf-linker --features llvm-22` failed")?;
    }
    step("setup: done");
    Ok(())
}

/// cargo-fuzz at its pinned version (it drives libFuzzer; the targets build with nightly).
fn fuzz_tools(log: Option<&Path>) -> Result<()> {
    let bin = cargo_home().join("bin/cargo-fuzz");
    let have = output(Command::new(&bin).arg("--version"));
    if have.is_some_and(|v| v.split_whitespace().last() == Some(CARGO_FUZZ_VERSION)) {
        step(&format!("fuzz: cargo-fuzz {CARGO_FUZZ_VERSION} present"));
        return Ok(());
    }
    step(&format!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}"));
    run(niced(log, "cargo")
        .args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
            "--force",
        ])
        .env("PATH", path_with_cargo_bin())
        .env_remove("RUSTUP_TOOLCHAIN"))
    .context("`cargo install cargo-fuzz --locked` failed")
}

/// `program`, as is (`log` None), or at the lowest CPU priority with its output appended to
/// `log` (a background run).
fn niced(log: Option<&Path>, program: &str) -> Command {
    let Some(log) = log else {
        return Command::new(program);
    };
    let mut c = Command::new("nice");
    c.args(["-n", "19", program]);
    let file = fs::OpenOptions::new().create(true).append(true).open(log);
    if let Ok(f) = file {
        if let Ok(g) = f.try_clone() {
            c.stdout(g);
        }
        c.stderr(f);
    }
    c
}

/// `cargo +nightly fuzz ...` in the workspace (the rustup proxy picks the toolchain).
fn cargo_fuzz(log: Option<&Path>) -> Command {
    let mut c = niced(log, "cargo");
    c.current_dir(workspace())
        .env("PATH", path_with_cargo_bin())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .args([&format!("+{NIGHTLY}"), "fuzz"]);
    c
}

/// One target's run: executions, wall-clock seconds, and a crash's reproducer if it found one.
struct FuzzRun {
    target: String,
    execs: u64,
    secs: u64,
    crash: Option<String>,
}

/// Run every target in fuzz/ for `secs` seconds each (one build first); fails on a crash.
/// With `log`, niced and its tools' output appended there (see [`niced`]).
fn fuzz_in(secs: u64, log: Option<&Path>) -> Result<()> {
    if let Some(l) = log {
        let _ = fs::remove_file(l);
    }
    fuzz_tools(log)?;
    let dir = workspace().join("fuzz");
    step("fuzz: building the targets (nightly, address sanitizer)");
    run(cargo_fuzz(log).args(["build", "--fuzz-dir"]).arg(&dir))
        .context("building the fuzz targets failed")?;
    let list = output(cargo_fuzz(None).args(["list", "--fuzz-dir"]).arg(&dir))
        .context("`cargo fuzz list` failed")?;
    let mut runs = Vec::new();
    for target in list.split_whitespace() {
        step(&format!("fuzz: {target} for {secs} s"));
        let corpus = dir.join("corpus").join(target);
        fs::create_dir_all(&corpus)?;
        let mut c = cargo_fuzz(log);
        c.args(["run", "--fuzz-dir"])
            .arg(&dir)
            .arg(target)
            .arg(&corpus);
        let seeds = dir.join("seeds").join(target);
        if seeds.is_dir() {
            c.arg(&seeds);
        }
        c.args([
            "--",
            &format!("-max_total_time={secs}"),
            "-print_final_stats=1",
            "-rss_limit_mb=4096",
            "-timeout=10",
        ]);
        let started = std::time::Instant::now();
        // Captured here (a background run's log gets it appended below).
        let out = c
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .with_context(|| format!("cannot start {c:?}"))?;
        if let Some(l) = log
            && let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(l)
        {
            use std::io::Write as _;
            let _ = f.write_all(&out.stderr);
        }
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| -> u64 {
            log.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
                .unwrap_or(0)
        };
        let crash = (!out.status.success()).then(|| {
            log.lines()
                .find_map(|l| {
                    l.split_once("Test unit written to ")
                        .map(|(_, p)| p.trim().to_string())
                })
                .unwrap_or_else(|| {
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    format!(
                        "no reproducer written ({}); last lines:\n{}",
                        out.status,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
        });
        let run = FuzzRun {
            target: target.to_string(),
            execs: stat("stat::number_of_executed_units"),
            secs: started.elapsed().as_secs(),
            crash,
        };
        match &run.crash {
            None => step(&format!(
                "fuzz: {target}: {} executions, no crash",
                run.execs
            )),
            Some(p) => step(&format!("fuzz: {target}: CRASH, reproducer {p}")),
        }
        runs.push(run);
    }
    step("fuzz: target  executions  seconds  result");
    for r in &runs {
        step(&format!(
            "fuzz: {}  {}  {}  {}",
            r.target,
            r.execs,
            r.secs,
            r.crash
                .as_deref()
                .map_or("ok".to_string(), |p| format!("crash: {p}"))
        ));
    }
    let total: u64 = runs.iter().map(|r| r.execs).sum();
    step(&format!("fuzz: {total} executions in all"));
    let crashed: Vec<&str> = runs
        .iter()
        .filter(|r| r.crash.is_some())
        .map(|r| r.target.as_str())
        .collect();
    if runs.is_empty() {
        bail!("no fuzz target found in {}", dir.display());
    }
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (reproduce with `cargo +nightly fuzz run --fuzz-dir fuzz TARGET REPRODUCER`)",
            crashed.join(", ")
        );
    }
    Ok(())
}

fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn ensure_debs(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        step(&format!("setup: packages present: {}", pkgs.join(" ")));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}; run as root or install them: apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step(&format!("setup: apt-get install {}", missing.join(" ")));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update failed")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))
}

fn test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(bin, _)| {
            output(Command::new("sh").args(["-c", &format!("command -v {bin}")])).is_none()
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    ensure_debs(&missing).context("installing test tools failed")?;
    if output(Command::new("python3").arg("--version")).is_none() {
        bail!("python3 is needed by the end-to-end tests (real Python clients)");
    }
    promtool()
}

/// `promtool` (checks the metrics output) from Debian's `prometheus` package, unpacked under
/// target/tools without installing the package (which would start a Prometheus server).
fn promtool() -> Result<()> {
    let dir = workspace().join("target/tools");
    let bin = dir.join("usr/bin/promtool");
    if bin.exists() {
        step("setup: promtool present");
        return Ok(());
    }
    step("setup: unpacking promtool from the Debian prometheus package into target/tools");
    std::fs::create_dir_all(&dir)?;
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    let got = Command::new("apt-get")
        .args(["download", "prometheus"])
        .current_dir(&debs)
        .status()
        .context("apt-get download prometheus")?;
    if !got.success() {
        run(Command::new("apt-get").arg("update")).context("apt-get update failed")?;
        run(Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&debs))
        .context("apt-get download prometheus failed")?;
    }
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no prometheus .deb downloaded")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir)).context("dpkg-deb -x failed")?;
    if !bin.exists() {
        bail!("the prometheus package has no usr/bin/promtool");
    }
    Ok(())
}

/// What the benchmarks compare against: nginx and h2load from Debian, mitmproxy from PyPI
/// (in a venv under target/, so the system Python stays untouched).
fn bench_tools() -> Result<()> {
    ensure_debs(&["nginx", "nghttp2-client"]).context("installing nginx and h2load failed")?;
    let venv = workspace().join("target/mitm-venv");
    if venv.join("bin/mitmdump").exists() {
        step("setup: mitmproxy present");
        return Ok(());
    }
    step("setup: installing mitmproxy into target/mitm-venv");
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv failed")?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "mitmproxy",
    ]))
    .context("pip install mitmproxy failed")
}

/// The release build's profile (gzip of `llvm-profdata merge --sparse`), and what trained it.
const PGO_PROFILE: &str = "gateway/pgo/gateway.profdata.gz";
const PGO_TRAINED: &str = "gateway/pgo/TRAINED";

/// Build the gateway; returns the binary. A release build is optimised with the committed
/// profile when this rustc's LLVM reads it (same major version as the one that trained it);
/// it lands in target/<host>/release then, beside the plain one, so neither build undoes the
/// other's artifacts.
fn build(release: bool) -> Result<PathBuf> {
    build_how(release).map(|(bin, _)| bin)
}

/// [`build`], and how the binary was built (for BENCHMARKS.md).
fn build_how(release: bool) -> Result<(PathBuf, String)> {
    step(&format!(
        "building the gateway ({})",
        if release { "release" } else { "debug" }
    ));
    let mut c = cargo();
    c.args(["build", "-p", "gateway"]);
    if !release {
        run(&mut c)?;
        return Ok((workspace().join("target/debug/gateway"), "debug".into()));
    }
    c.arg("--release");
    let rustc = rustc()?;
    match pgo_profile(&rustc) {
        Ok(profile) => {
            let host = &rustc.host;
            step(&format!("  with the profile {PGO_PROFILE} (PGO)"));
            c.args(["--target", host, "--config"]).arg(target_rustflags(
                host,
                &[
                    format!("-Cprofile-use={}", profile.display()),
                    // A function changed since training just goes without its profile.
                    "-Cllvm-args=-no-pgo-warn-mismatch".into(),
                ],
            ));
            run(&mut c)?;
            let commit: String = trained("commit")
                .unwrap_or_default()
                .chars()
                .take(7)
                .collect();
            Ok((
                workspace()
                    .join("target")
                    .join(host)
                    .join("release/gateway"),
                format!("release, profile-guided (profile trained at commit {commit})"),
            ))
        }
        Err(why) => {
            step(&format!("  without profile-guided optimisation: {why}"));
            run(&mut c)?;
            Ok((
                workspace().join("target/release/gateway"),
                format!("release, no profile-guided optimisation ({why})"),
            ))
        }
    }
}

/// `--config` value setting the rustflags of `host` builds only: not build scripts, and not
/// the nested eBPF build (an environment variable would reach it).
fn target_rustflags(host: &str, flags: &[String]) -> String {
    let list: Vec<String> = flags.iter().map(|f| format!("{f:?}")).collect();
    format!("target.{host}.rustflags=[{}]", list.join(","))
}

/// What `rustc -vV` says, asked once per build.
struct Rustc {
    /// "rustc 1.95.0 (...)"
    version: String,
    host: String,
    /// Major version of the LLVM inside rustc.
    llvm_major: String,
}

fn rustc() -> Result<Rustc> {
    let vv = output(Command::new("rustc").current_dir(workspace()).arg("-vV"))
        .context("rustc -vV failed")?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no `{name}` line in rustc -vV"))
    };
    Ok(Rustc {
        version: vv.lines().next().unwrap_or_default().to_string(),
        host: field("host: ")?,
        llvm_major: field("LLVM version: ")?
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

/// A `key = "value"` line of gateway/pgo/TRAINED.
fn trained(key: &str) -> Option<String> {
    let text = fs::read_to_string(workspace().join(PGO_TRAINED)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// `gzip FLAGS INPUT > OUT`, written through OUT.part so an interruption leaves no half file.
fn gzip(flags: &[&str], input: &Path, out: &Path) -> Result<()> {
    let part = out.with_extension("part");
    let file = fs::File::create(&part).with_context(|| part.display().to_string())?;
    let st = Command::new("gzip")
        .args(flags)
        .arg(input)
        .stdout(file)
        .status()
        .context("gzip")?;
    if !st.success() {
        let _ = fs::remove_file(&part);
        bail!(
            "gzip {} {} failed with {st}",
            flags.join(" "),
            input.display()
        );
    }
    fs::rename(&part, out).with_context(|| out.display().to_string())
}

/// `cargo run --release --bin bench -- ARGS` against the gateway binary `bin`.
fn bench(bin: &Path) -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "gateway-tests",
        "--bin",
        "bench",
        "--",
    ])
    .env("GATEWAY_BIN", bin);
    c
}

/// The profile, unpacked under target/, if this toolchain can use it; why not otherwise.
fn pgo_profile(rustc: &Rustc) -> Result<PathBuf, String> {
    if env::var_os("GATEWAY_NO_PGO").is_some() {
        return Err("GATEWAY_NO_PGO is set".into());
    }
    let ws = workspace();
    let packed = ws.join(PGO_PROFILE);
    if !packed.exists() {
        return Err(format!(
            "{PGO_PROFILE} is missing (cargo xtask pgo makes it)"
        ));
    }
    let want = trained("llvm")
        .ok_or_else(|| format!("{PGO_TRAINED} does not name the LLVM that trained it"))?;
    let have = &rustc.llvm_major;
    if want != *have {
        return Err(format!(
            "the profile is from LLVM {want}, this rustc has LLVM {have} (cargo xtask pgo retrains)"
        ));
    }
    // Named by its content: cargo tracks the rustflags, not the file they name, so a new
    // profile must change the flags to get the gateway rebuilt with it.
    let bytes = fs::read(&packed).map_err(|e| format!("{PGO_PROFILE}: {e}"))?;
    let out = ws.join(format!(
        "target/pgo/gateway-{:016x}.profdata",
        fnv1a(&bytes)
    ));
    if !out.exists() {
        let dir = out.parent().expect("has a parent");
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        gzip(&["-dc"], &packed, &out).map_err(|e| format!("{e:#}"))?;
        // Earlier profiles unpacked here are dead weight now.
        for old in fs::read_dir(dir).into_iter().flatten().flatten() {
            if old.path() != out && old.path().extension().is_some_and(|x| x == "profdata") {
                let _ = fs::remove_file(old.path());
            }
        }
    }
    Ok(out)
}

/// FNV-1a, 64 bit: a content name, not a security check.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `cargo xtask pgo`: instrumented build, training workload (bench train), merged profile.
fn pgo_train() -> Result<()> {
    let ws = workspace();
    let rustc = rustc()?;
    let (host, llvm) = (&rustc.host, &rustc.llvm_major);
    let profdata = PathBuf::from(format!("/usr/lib/llvm-{llvm}/bin/llvm-profdata"));
    if !profdata.exists() {
        bail!(
            "{} is missing: rustc uses LLVM {llvm}, and its profiles need that llvm-profdata \
             (Debian package llvm-{llvm})",
            profdata.display()
        );
    }
    let gen_dir = ws.join("target/pgo-gen");
    let raw = gen_dir.join("profraw");
    let _ = fs::remove_dir_all(&raw);
    fs::create_dir_all(&raw)?;
    step("pgo: building an instrumented gateway (target/pgo-gen)");
    run(cargo()
        .args(["build", "--release", "-p", "gateway", "--target", host])
        .arg("--target-dir")
        .arg(&gen_dir)
        .arg("--config")
        .arg(target_rustflags(
            host,
            &[format!("-Cprofile-generate={}", raw.display())],
        )))?;
    step("pgo: training (bench train: h2 and HTTP/1.1 clients through the redirect)");
    run(bench(&gen_dir.join(host).join("release/gateway")).args(["/dev/null", "train"]))?;
    let raws: Vec<PathBuf> = fs::read_dir(&raw)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if raws.is_empty() {
        bail!("the training wrote no profile into {}", raw.display());
    }
    let merged = gen_dir.join("gateway.profdata");
    step("pgo: merging");
    run(Command::new(&profdata)
        .args(["merge", "--sparse", "-o"])
        .arg(&merged)
        .args(&raws))?;
    let packed = ws.join(PGO_PROFILE);
    fs::create_dir_all(packed.parent().expect("has a parent"))?;
    gzip(&["-9n", "-c"], &merged, &packed)?;
    let commit = output(
        Command::new("git")
            .current_dir(&ws)
            .args(["rev-parse", "HEAD"]),
    )
    .unwrap_or_default();
    let version = &rustc.version;
    fs::write(
        ws.join(PGO_TRAINED),
        format!(
            "# Written by `cargo xtask pgo`: what trained {PGO_PROFILE}.\n\
             # Retrain after changes to the data path; a stale profile only optimises less.\n\
             commit = \"{}\"\nrustc = \"{version}\"\nllvm = \"{llvm}\"\n\
             workload = \"bench train (tests/src/bin/bench/train.rs)\"\n",
            commit.trim()
        ),
    )?;
    step(&format!(
        "pgo: wrote {PGO_PROFILE} ({} bytes) and {PGO_TRAINED}",
        fs::metadata(&packed)?.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustflags_config_is_a_toml_list_that_survives_odd_paths() {
        let v = target_rustflags(
            "x86_64-unknown-linux-gnu",
            &[
                "-Cprofile-use=/w s/\"q\"/p.profdata".into(),
                "-Cllvm-args=-no-pgo-warn-mismatch".into(),
            ],
        );
        assert_eq!(
            v,
            r#"target.x86_64-unknown-linux-gnu.rustflags=["-Cprofile-use=/w s/\"q\"/p.profdata","-Cllvm-args=-no-pgo-warn-mismatch"]"#
        );
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_committed_profile_names_the_llvm_that_trained_it() {
        let trained = fs::read_to_string(workspace().join(PGO_TRAINED)).unwrap();
        assert!(
            trained.lines().any(|l| l.starts_with("llvm = \"")),
            "{PGO_TRAINED}: {trained}"
        );
        // What the build reads from it.
        let llvm = super::trained("llvm").unwrap_or_default();
        assert!(
            !llvm.is_empty() && llvm.bytes().all(|b| b.is_ascii_digit()),
            "llvm = {llvm:?}"
        );
        assert_eq!(super::trained("commit").map(|c| c.len()), Some(40));
        // An indexed LLVM profile (what rustc's -Cprofile-use reads), not a raw one.
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(workspace().join(PGO_PROFILE))
            .output()
            .unwrap();
        assert!(out.status.success(), "gzip -dc {PGO_PROFILE}");
        assert_eq!(
            out.stdout.get(..8),
            Some(&0x8169_666f_7270_6cff_u64.to_le_bytes()[..]),
            "{PGO_PROFILE} is not an indexed profile"
        );
    }
}

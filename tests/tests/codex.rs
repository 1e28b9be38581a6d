//! The Codex CLI (npm `@openai/codex`, pinned [`CODEX_VERSION`]) unchanged, as a CI job runs it:
//! an API key given with `codex login --with-api-key` into a private `CODEX_HOME`, one prompt
//! with `codex exec`, the CA trusted through the system store (a bundle holding the CA
//! bind-mounted over /etc/ssl/certs/ca-certificates.crt in a private mount namespace, as
//! `gateway ca install` would leave it) and `api.openai.com` named by a bind-mounted hosts file.
//! Codex opens `/v1/responses` as a WebSocket (`OpenAI-Beta: responses_websockets=...`) and
//! falls back to HTTPS with a "falling back to HTTP" warning when the WebSocket fails; the
//! fake records every HTTPS request, so a fallback cannot go unnoticed.
//!
//! First Codex straight against the fake (no gateway): the fake speaks what Codex expects, and
//! a fake that refuses the upgrade makes Codex log the fallback and POST over HTTPS (so the
//! checks for "no fallback" can fail). Then through the gateway: the vault key reaches the
//! fake, never Codex's key, and the session is journaled.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use gateway_tests::{
    CODEX_VERSION, codex_cli,
    provider::{ProviderEnv, Providers, REPLY},
    run,
    wsfake::{WsApi, WsOptions, WsSession},
};

const VAULT_KEY: &str = "sk-vault-codex-ws-5b7d0c";
const JOB_KEY: &str = "sk-dummy-codex-from-the-job";
const FALLBACK: &str = "falling back to HTTP";

/// A `CODEX_HOME` for one run: config for CI (no update check, no analytics, no
/// notifications), and the API key stored the documented way.
fn codex_home(dir: &Path) -> PathBuf {
    let home = dir.join("codex-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        "check_for_update_on_startup = false\n\
         model = \"gpt-5\"\n\
         [analytics]\nenabled = false\n\
         [features]\nin_app_updates = false\nplugins = false\nremote_plugin = false\n\
         plugin_sharing = false\napps = false\nskill_mcp_dependency_install = false\n",
    )
    .unwrap();
    let mut login = Command::new(codex_cli());
    login
        .args(["login", "--with-api-key"])
        .env("CODEX_HOME", &home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().expect("codex login");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(JOB_KEY.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "codex login --with-api-key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    home
}

/// Names Codex reaches besides the API (model catalog, plugin sync, sign-in): pointed at a
/// closed loopback address of this test's range, so nothing leaves the machine and each
/// attempt fails at once.
const ELSEWHERE: &str =
    "127.177.0.1 chatgpt.com ab.chatgpt.com auth.openai.com github.com api.github.com\n";

/// `hosts` (the fakes' names) plus [`ELSEWHERE`], written into `dir`.
fn hosts_with(dir: &Path, hosts: &str) -> PathBuf {
    let p = dir.join("hosts");
    std::fs::write(&p, format!("{hosts}{ELSEWHERE}")).unwrap();
    p
}

/// The system CA bundle plus `ca`, written into `dir`.
fn bundle_with(dir: &Path, ca: &Path) -> PathBuf {
    let mut pem = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    pem.push(b'\n');
    pem.extend(std::fs::read(ca).expect("read CA"));
    let p = dir.join("ca-certificates.crt");
    std::fs::write(&p, pem).unwrap();
    p
}

/// `codex exec PROMPT` in a private mount namespace with `hosts` over /etc/hosts and `bundle`
/// over the system CA bundle, moved into `cgroup` first when given.
fn codex_exec(
    home: &Path,
    work: &Path,
    hosts: &Path,
    bundle: &Path,
    cgroup: Option<&Path>,
) -> Command {
    let procs = cgroup
        .map(|c| c.join("cgroup.procs").display().to_string())
        .unwrap_or_default();
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$0\" /etc/hosts && mount --bind \"$1\" /etc/ssl/certs/ca-certificates.crt \
             && { [ -z \"$2\" ] || echo $$ > \"$2\"; } && shift 3 && exec \"$@\"",
        )
        .arg(hosts)
        .arg(bundle)
        .arg(procs)
        .arg("placeholder")
        .arg(codex_cli())
        .args([
            "exec",
            "--skip-git-repo-check",
            "--ephemeral",
            "--sandbox",
            "read-only",
            "--color",
            "never",
            "-C",
        ])
        .arg(work)
        .arg("Reply with a greeting.")
        .stdin(std::process::Stdio::null())
        .env("CODEX_HOME", home)
        .env(
            "RUST_LOG",
            std::env::var("CODEX_TEST_RUST_LOG")
                .unwrap_or_else(|_| "warn,codex_api=info,codex_core::client=info".into()),
        )
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_API_KEY")
        .env_remove("SSL_CERT_FILE")
        .env_remove("CODEX_CA_CERTIFICATE")
        .current_dir(work);
    c
}

/// What every Codex run must show: the fake's answer, and one WebSocket session (no fallback).
fn assert_websocket_answered(r: &gateway_tests::ClientRun, ws: &[WsSession], what: &str) {
    assert!(r.ok, "{what}: codex failed: {r:#?}\nsessions: {ws:#?}");
    assert!(
        r.stdout.contains(REPLY),
        "{what}: codex did not print the fake's reply: {r:#?}"
    );
    assert!(
        !r.stderr.contains(FALLBACK) && !r.stdout.contains(FALLBACK),
        "{what}: codex fell back to HTTPS: {r:#?}"
    );
    let responses: Vec<&WsSession> = ws
        .iter()
        .filter(|s| s.api == Some(WsApi::Responses))
        .collect();
    assert_eq!(
        responses.len(),
        1,
        "{what}: want exactly one Responses WebSocket (first attempt): {ws:#?}"
    );
    let s = responses[0];
    assert!(s.rejected.is_none(), "{what}: {s:#?}");
    assert!(
        s.header("openai-beta")
            .iter()
            .any(|v| v.contains("responses_websockets=")),
        "{what}: no OpenAI-Beta responses_websockets: {s:#?}"
    );
    assert!(
        s.received
            .iter()
            .any(|m| m.kind() == "response.create" && m.json().unwrap()["generate"] != false),
        "{what}: no generating response.create: {s:#?}"
    );
    assert!(s.sent_text().contains(REPLY), "{what}: {s:#?}");
}

fn assert_no_http_responses(seen: &[gateway_tests::provider::Seen], what: &str) {
    let posts: Vec<_> = seen
        .iter()
        .filter(|s| s.target.starts_with("/v1/responses"))
        .collect();
    assert!(
        posts.is_empty(),
        "{what}: an HTTPS request to /v1/responses (fallback): {posts:#?}"
    );
}

#[test]
fn codex_speaks_websocket_to_the_fake_at_the_first_attempt() {
    gateway_tests::require_privileges();
    let bin = codex_cli();
    let n = gateway_tests::unique();
    let fakes = Providers::start(175, n);
    let r = direct_run(&fakes, "gw-codex-direct-");
    let ws = fakes.openai.wait_ws(1, Duration::from_secs(5));
    eprintln!(
        "codex {CODEX_VERSION} ({}): stderr:\n{}",
        bin.display(),
        r.stderr
    );
    assert_websocket_answered(&r, &ws, "direct");
    assert_no_http_responses(&fakes.openai.seen(), "direct");
    // Straight to the fake, the fake sees Codex's own key.
    let s = ws.iter().find(|s| s.api == Some(WsApi::Responses)).unwrap();
    assert_eq!(
        s.credentials(),
        [format!("authorization: Bearer {JOB_KEY}")]
    );
}

/// One `codex exec` straight against the fakes (no gateway): its own hosts file, a bundle
/// with the fakes' CA, a fresh CODEX_HOME.
fn direct_run(fakes: &Providers, prefix: &str) -> gateway_tests::ClientRun {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let hosts = hosts_with(dir.path(), &fakes.hosts());
    let bundle = bundle_with(dir.path(), &fakes.pki.ca_pem);
    let home = codex_home(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    run(
        codex_exec(&home, &work, &hosts, &bundle, None),
        Duration::from_secs(120),
    )
}

#[test]
fn codex_falls_back_to_https_when_the_upgrade_is_refused() {
    gateway_tests::require_privileges();
    codex_cli();
    let n = gateway_tests::unique();
    let fakes = Providers::start(175, n);
    fakes.openai.ws_options(WsOptions {
        refuse: Some(426),
        ..Default::default()
    });
    let r = direct_run(&fakes, "gw-codex-refused-");
    let ws = fakes.openai.ws_sessions();
    assert!(
        !ws.is_empty() && ws.iter().all(|s| s.rejected.is_some()),
        "Codex did not try the WebSocket first: {ws:#?}"
    );
    assert!(
        r.stderr.contains(FALLBACK),
        "no fallback line in Codex's log: {r:#?}"
    );
    let posts: Vec<_> = fakes
        .openai
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.target.starts_with("/v1/responses"))
        .collect();
    assert!(!posts.is_empty(), "no HTTPS fallback request: {r:#?}");
    assert!(r.ok && r.stdout.contains(REPLY), "{r:#?}");
    eprintln!(
        "{} refused upgrades, then: {}",
        ws.len(),
        r.stderr
            .lines()
            .filter(|l| l.contains(FALLBACK))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn codex_through_the_gateway_gets_the_fakes_answer_with_the_vault_key() {
    gateway_tests::require_privileges();
    codex_cli();
    let env = ProviderEnv::start("gw-codex", 176, "", &[("openai", VAULT_KEY)]);
    let dir = tempfile::Builder::new()
        .prefix("gw-codex-gw-")
        .tempdir()
        .unwrap();
    let bundle = bundle_with(dir.path(), &env.ca);
    let hosts = hosts_with(dir.path(), &env.fakes.hosts());
    let home = codex_home(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let r = run(
        codex_exec(&home, &work, &hosts, &bundle, Some(&env.cg.path)),
        Duration::from_secs(120),
    );
    let openai = &env.fakes.openai;
    let ws = openai.wait_ws(1, Duration::from_secs(5));
    eprintln!("codex stderr:\n{}", r.stderr);
    assert_websocket_answered(&r, &ws, &format!("gateway log:\n{}", env.gw.raw_log()));
    assert_no_http_responses(&openai.seen(), "through the gateway");
    for s in &ws {
        assert_eq!(
            s.credentials(),
            [format!("authorization: Bearer {VAULT_KEY}")],
            "{s:#?}"
        );
        assert!(
            !format!("{s:?}").contains(JOB_KEY),
            "Codex's key reached the provider: {s:#?}"
        );
    }
    for s in openai.seen() {
        assert!(!format!("{s:?}").contains(JOB_KEY), "{s:#?}");
    }
    // The vault key is never in the gateway's log.
    assert!(!env.gw.raw_log().contains(VAULT_KEY));
    // The journal holds the session as one exchange on /v1/responses, with its messages
    // (the fake's text in it), attributed to Codex, and no key of either side.
    let t = std::time::Instant::now();
    let (recs, export) = loop {
        let out = env.gw.cli(&["journal", "list", "--json"]);
        assert!(out.status.success(), "gateway journal list: {out:?}");
        let recs: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let export =
            String::from_utf8_lossy(&env.gw.cli(&["journal", "export"]).stdout).into_owned();
        let found = recs.iter().any(|r| r.to_string().contains("/v1/responses"));
        if found || t.elapsed() > Duration::from_secs(10) {
            break (recs, export);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ws_recs: Vec<&Value> = recs
        .iter()
        .filter(|r| r.to_string().contains("/v1/responses"))
        .collect();
    assert_eq!(
        ws_recs.len(),
        1,
        "want one journal record of the session: {recs:#?}"
    );
    let rec = ws_recs[0];
    eprintln!(
        "journal: outcome {} close {}",
        rec["outcome"], rec["websocket"]["close"]
    );
    assert_eq!(rec["provider"], "openai", "{rec:#}");
    assert_eq!(rec["status"], 101, "{rec:#}");
    // Codex ends its session by going away (no close frame) once the answer is complete:
    // that is the client's doing, not the provider's failure.
    assert!(
        rec["outcome"] == "completed" || rec["outcome"] == "client_gone",
        "{}",
        rec["outcome"]
    );
    // Attributed to the job: Codex's process in the test's cgroup.
    assert!(
        rec["who"]["cgroup"]
            .as_str()
            .is_some_and(|c| env.cg.path.ends_with(c.trim_start_matches('/'))),
        "{}",
        rec["who"]
    );
    // Every message Codex sent is in the session's timeline.
    let sent_by_codex = ws
        .iter()
        .find(|s| s.api == Some(WsApi::Responses))
        .map(|s| s.received.len())
        .unwrap();
    assert_eq!(
        rec["websocket"]["client_messages"], sent_by_codex,
        "{}",
        rec["websocket"]["close"]
    );
    let line = export
        .lines()
        .find(|l| l.contains("/v1/responses"))
        .unwrap_or_else(|| panic!("no exported record of the session: {export}"));
    assert!(
        line.contains(REPLY),
        "the session's messages are not in the journal: {line}"
    );
    for key in [VAULT_KEY, JOB_KEY] {
        assert!(!export.contains(key), "a key in the journal");
    }
}

#[test]
fn codex_through_the_gateway_never_sees_the_vault_key_split_across_deltas() {
    gateway_tests::require_privileges();
    codex_cli();
    let env = ProviderEnv::start("gw-codex-mask", 177, "", &[("openai", VAULT_KEY)]);
    // The provider echoes the key it received, cut in two delta events (and whole in the
    // `.done` events and the completed response, as the real stream repeats the text).
    env.fakes.openai.ws_options(WsOptions {
        deltas: Some(vec![
            "Your key is {{CRED_A}}".into(),
            "{{CRED_B}} as I was told.".into(),
        ]),
        ..Default::default()
    });
    let dir = tempfile::Builder::new()
        .prefix("gw-codex-mask-")
        .tempdir()
        .unwrap();
    let bundle = bundle_with(dir.path(), &env.ca);
    let hosts = hosts_with(dir.path(), &env.fakes.hosts());
    let home = codex_home(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let r = run(
        codex_exec(&home, &work, &hosts, &bundle, Some(&env.cg.path)),
        Duration::from_secs(120),
    );
    let ws = env.fakes.openai.wait_ws(1, Duration::from_secs(5));
    let s = ws
        .iter()
        .find(|s| s.api == Some(WsApi::Responses))
        .unwrap_or_else(|| panic!("no Responses WebSocket: {ws:#?}\n{r:#?}"));
    eprintln!("codex printed: {}", r.stdout.trim());
    // The fake did send the key, split: the check below can fail.
    assert!(s.sent_text().contains(VAULT_KEY), "{s:#?}");
    assert!(r.ok, "{r:#?}\ngateway log:\n{}", env.gw.raw_log());
    assert!(!r.stderr.contains(FALLBACK), "{r:#?}");
    let (half_a, half_b) = VAULT_KEY.split_at(VAULT_KEY.len() / 2);
    for out in [&r.stdout, &r.stderr] {
        assert!(
            !out.contains(VAULT_KEY) && !out.contains(half_b),
            "the vault key reached Codex: {r:#?}"
        );
    }
    assert!(
        r.stdout.contains("Your key is") && r.stdout.contains("[MASKED"),
        "Codex did not print the masked answer: {r:#?}"
    );
    assert!(
        !r.stdout.contains(&format!("Your key is {half_a}")),
        "the first half of the key came through: {r:#?}"
    );
}
